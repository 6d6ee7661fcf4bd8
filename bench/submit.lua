-- wrk script: POST one demo.noop job per request (errand bench, HTTP submit).
wrk.method = "POST"
wrk.body = '{"app": "demo", "command": "noop", "input": {"n": 1}}'
wrk.headers["Content-Type"] = "application/json"
