"""The training job: fine-tunes the tagger and publishes versioned artefacts."""
