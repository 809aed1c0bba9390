"""ssm_icl.tasks."""
