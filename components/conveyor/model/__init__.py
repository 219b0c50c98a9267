"""The exported model, as every step sees it: the files it keeps (`layout`), the inputs its
serving signature takes (`inputs`), the record of its eval-time predictions (`predictions`) and
the infra check that it loads and answers in a fresh process (`infra`). Below every step, so
train, evaluate, push, predict, serving and monitor share one contract without importing each
other."""
