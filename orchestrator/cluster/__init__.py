"""Code that runs on the cluster (Ray workers, the GPU node): training and export.

Nothing here imports the CLI or laptop-side modules.
"""
