-- wrk script: GET /api/health, the HTTP baseline of the same run.
wrk.method = "GET"
