"""hnmine's command line (installed as ``hnmine.cli``)."""
