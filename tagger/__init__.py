"""The ``tagger`` command: one entry point over the trainer's and the API's commands."""
