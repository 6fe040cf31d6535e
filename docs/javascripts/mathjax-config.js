// MathJax 3 on every page: $...$ and \(...\) inline, $$...$$ and \[...\] displayed.
// Markdown pages reach it through pymdownx.arithmatex; notebook pages keep their $...$.
// Code (code, pre) is never typeset; \$ writes a literal dollar sign.
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
