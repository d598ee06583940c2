"""Directory backends: where citygate learns who people are, their department and role."""
