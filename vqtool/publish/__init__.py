"""Publishing: torchao export, model cards, Hub upload and one-pass quant families.

- :mod:`vqtool.publish.torchao_export`: ``export_torchao(src, out, policy)`` (``vqtool quantize --format torchao``)
  and ``load_torchao_transformer(path)``; policies (:mod:`vqtool.publish.torchao_policy`) in
  ``mappings/policies/40-torchao.toml``; :mod:`vqtool.publish.torchao_store` lets validation read an export.
- :mod:`vqtool.publish.sources`: released models (Hub repo, license) by family/variant, for cards.
- :mod:`vqtool.publish.variants`: ``scan_folder(folder)``, what a folder publishes and what it leaves out.
- :mod:`vqtool.publish.reports`: the one adapter over ``vqtool validate``'s report.json.
- :mod:`vqtool.publish.card`: ``render_card(scan, CardInfo(...))``, the generated README.md.
- :mod:`vqtool.publish.upload`: ``plan_upload`` / ``upload`` (``vqtool upload``).
- :mod:`vqtool.publish.family`: ``make_family`` (``vqtool family``).
"""
