// MathJax 3 on every page: $...$ and \(...\) inline, $$...$$ and \[...\] displayed.
// Markdown pages reach it through pymdownx.arithmatex; notebook pages keep their $...$.
// Code (code, pre) is never typeset; \$ writes a literal dollar sign.
// MathJax itself is served with the site, so math works offline: javascripts/mathjax/
// holds MathJax 3.2.2's es5/tex-mml-svg.js as in the npm package (`npm pack mathjax@3`;
// Apache-2.0, see the LICENSE file there). SVG output, not CHTML: the notebook pages'
// JupyterLab styles misplace the rows of CHTML matrices, and SVG needs no font files.
window.MathJax = {
  tex: {
    inlineMath: [["$", "$"], ["\\(", "\\)"]],
    displayMath: [["$$", "$$"], ["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: "tex2jax_ignore",
    processHtmlClass: "tex2jax_process|arithmatex",
  },
};
