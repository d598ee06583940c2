"""Access requests: the Social Media Request Form, from the block page to a working grant.

An employee asks for sites with a business purpose; the Directors of their department (or
their designees) decide, in the stages the city's procedure sets; an approval becomes a grant
in the department's grant file (grant_file.py).
"""
