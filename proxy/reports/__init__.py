"""`citygate report` and `grants review`: the summaries built from the access log and their HTML
page. Pure: records in, report out; the command that reads and writes files is in `cli`."""
