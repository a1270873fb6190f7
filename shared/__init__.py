"""Code shared by the trainer and the API: data readers, model, artefact store, predictor."""

import os

# Offline at run time: nothing in the product may reach a model hub unless a user asks for a
# download explicitly. Set before transformers/huggingface_hub are first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
