"""Training data: SOTAB v2 CTA files (reading, validating, writing), labelled column examples, and the synthetic
table generator (`synth/`)."""
