"""PulseRL in production (Part VI): versioned artefacts, the pipeline, serving and
monitoring."""
