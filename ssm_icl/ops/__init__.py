"""ssm_icl.ops."""
