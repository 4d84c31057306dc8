"""Reference inference pipeline (diffusers-based) used by `vqtool validate`; filled in by the validation work."""
