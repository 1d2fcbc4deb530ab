"""SavedModel export, TF Serving configuration and clients."""
