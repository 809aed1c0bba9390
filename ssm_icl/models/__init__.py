"""ssm_icl.models."""
