"""The HTTP service: serves the newest published tagger and hot-reloads new versions."""
