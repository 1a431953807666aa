"""The web console at `/`: a server-rendered page that static/console/*.js keeps live."""
