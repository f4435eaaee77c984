"""Figures of tinynet's own outputs (matplotlib, imported only when drawing).

  runs.py    curves of training-run folders for `tinynet plot`: labels from each
             run's config.json, one panel per metric kind, seeds as mean +- band
  scales.py  colour scales of matrix heatmaps for `tinynet inspect`: linear,
             symlog (linthresh from the data) or one scale per block
"""
