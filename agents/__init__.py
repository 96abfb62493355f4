"""faust agents: the ordered payment agent, the concurrent gateway executor, projections."""
