# Maximum-likelihood (REML = FALSE) fits of lme4 on data.csv, the reference of
# tests/test_lmmlasso.py::test_lambda_zero_matches_lme4. Regenerate with
#   Rscript tests/data/lme4_ml/make_reference.R   (R 4.2.2, lme4 1.1-31 from Debian's packages)
suppressPackageStartupMessages(library(lme4))
here <- dirname(sub("--file=", "", grep("--file=", commandArgs(FALSE), value = TRUE)))
d <- read.csv(file.path(here, "data.csv"))
d$group <- factor(d$group)
ctrl <- lmerControl(optimizer = "nloptwrap", optCtrl = list(xtol_abs = 1e-14, ftol_abs = 1e-14, maxeval = 1e5),
                    calc.derivs = FALSE)
models <- list(
  identity = y ~ x1 + x2 + x3 + (1 | group),
  full = y ~ x1 + x2 + x3 + (1 + x1 | group),
  diagonal = y ~ x1 + x2 + x3 + (1 + x1 || group)
)
rows <- lapply(names(models), function(name) {
  fit <- lmer(models[[name]], data = d, REML = FALSE, control = ctrl)
  psi <- as.matrix(Matrix::bdiag(VarCorr(fit)))
  data.frame(cov = name, loglik = as.numeric(logLik(fit)), sigma2 = sigma(fit)^2,
             fixef = paste(sprintf("%.12g", fixef(fit)), collapse = ";"),
             psi = paste(sprintf("%.12g", as.vector(psi)), collapse = ";"))
})
out <- do.call(rbind, rows)
write.csv(out, file.path(here, "lme4_fits.csv"), row.names = FALSE)
print(out)
