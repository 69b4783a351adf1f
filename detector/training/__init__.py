"""The model lifecycle: training data, model building and export, training, calibration.

Nothing here runs in the service: `detector` (the serving path) never imports
this package. The CLI's `deepscreen model ...` commands call the plain
functions of `detector.training.commands`, which orchestrate the modules below.
"""
