"""Open Notebook's background work (sources, podcasts, transcription) as
a small app on errand: the example the repository's README points to."""
