"""ssm_icl.baselines."""
