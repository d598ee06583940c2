"""Who is asking, beyond directory passwords: the `identity:` settings and the single sign-on
token checks. Pure; fetching issuers' keys is the addons' job (`citygate.addons.jwks`)."""
