"""ssm_icl.eval."""
