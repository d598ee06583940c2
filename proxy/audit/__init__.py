"""The access log: its records, hash chain, files, queries and settings (pure), and the writer
and syslog sinks (`writer`, `sinks`), which do the file and network I/O."""
