"""The MoLE math: config, token routing, the MoLE linear layer, PiSSA split init, attaching to a model."""
