"""ssm_icl.nn."""
