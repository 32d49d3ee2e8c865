"""Inputs and outputs: readers and validators, the sampler tables, GraphLearn text, the publisher."""
