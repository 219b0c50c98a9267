"""conveyor's HTML reports: self-contained pages (inline CSS and SVG charts, no script, no font,
stylesheet or image fetched from anywhere), so they open offline, in the Kubeflow UI's sandboxed
iframe and in Vertex AI's "View HTML".

- `conveyor.reports.html`: page skeleton, escaping, tables (no matplotlib);
- `conveyor.reports.charts`: matplotlib figures (drawn without pyplot, text as paths) as inline
  SVG; imported only when a report is drawn, never at `import conveyor` nor by `conveyor serve`;
- `conveyor.reports.evaluate`: the evaluation report; `conveyor.reports.wording`: sentences
  its HTML and Markdown share (no matplotlib).

The validation report is `conveyor.validate.report`.
"""
