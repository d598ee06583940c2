"""The access-request portal: the Social Media Request Form for employees, the approval pages for
Directors. An HTTP server edge (Starlette, served by uvicorn) around proxy/requests."""
