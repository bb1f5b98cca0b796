"""The Gradio app's pieces: one module per tab over the pipeline (app.py builds and launches)."""
