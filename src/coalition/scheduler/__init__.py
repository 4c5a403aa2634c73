"""Scheduled jobs run inside the hub (`coalition serve --jobs`): expiry, hold expiry, the tier
review and the integrity proof, each under a database lease so that one process of many runs
it, each run recorded (`coalition jobs status`) and measured (`coalition_job_*` metrics)."""
