// MathJax 2 for pymdownx.arithmatex (generic mode: \( \) inline, \[ \] display, in span/div.arithmatex).
window.MathJax = {
  jax: ["input/TeX", "output/SVG"],
  extensions: ["tex2jax.js"],
  TeX: {extensions: ["AMSmath.js", "AMSsymbols.js"]},
  tex2jax: {inlineMath: [["\\(", "\\)"]], displayMath: [["\\[", "\\]"]], processEscapes: true},
  showMathMenu: false,
  messageStyle: "none",
};
