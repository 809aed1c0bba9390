"""ssm_icl.train."""
