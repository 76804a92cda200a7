"""Code that runs on the laptop: pull, evaluate, report, publish. Nothing here runs on the cluster."""
