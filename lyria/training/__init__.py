"""Training: the LightningModule, optimizer and schedule, callbacks, baselines and the train() entry."""
