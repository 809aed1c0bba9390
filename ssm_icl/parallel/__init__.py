"""ssm_icl.parallel."""
