"""Data: question files, audio, the LightningDataModule, check-data and the synthetic set."""
