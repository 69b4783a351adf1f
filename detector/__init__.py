"""Video → verdict: probe, decode, faces, 20-frame clips, ResNeXt50+LSTM, aggregation.

No Kafka, Redis or HTTP here: the service (`consumer`) brings those. Import the
submodules directly; this package imports nothing heavy itself, so that the
decoder worker processes never load torch.
"""
