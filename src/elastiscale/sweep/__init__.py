"""`elastiscale sweep`: many backtests at once, judged on attainment/GPU-hour frontiers.

`spec` reads the sweep file and expands it into cells; `results` runs one cell and keeps
results.csv; `runner` runs the cells (local process pool or `ray_pool`) and resumes;
`frontier` draws the frontiers and writes summary.md; `cli` is the command.
"""
