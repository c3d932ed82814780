// ESLint for the nurse station page (api/static, docs/interfaces.md section 4) and the node
// tests of its pure modules (tests/js), run by scripts/test. The page is ES modules (index.html
// loads page.js with type="module", which imports the others; api/static/package.json says
// "module" to Node.js) run by the browser as they are, so a name a module never declares or
// imports is an error here: in the browser it would resolve to whatever the window holds under
// that name, as `live` once resolved to the <p id="live"> element (issue 17).

"use strict";

const js = require("@eslint/js");
const globals = require("globals");

// Window properties a page reads by mistake when it forgets to declare a name of its own: they
// are browser globals, so no-undef lets them through (from confusing-browser-globals).
const CONFUSING = [
  "addEventListener", "blur", "close", "closed", "confirm", "defaultStatus", "defaultstatus",
  "event", "external", "find", "focus", "frameElement", "frames", "history", "innerHeight",
  "innerWidth", "length", "location", "locationbar", "menubar", "moveBy", "moveTo", "name",
  "onblur", "onerror", "onfocus", "onload", "onresize", "onunload", "open", "opener", "opera",
  "outerHeight", "outerWidth", "pageXOffset", "pageYOffset", "parent", "print",
  "removeEventListener", "resizeBy", "resizeTo", "screen", "screenLeft", "screenTop", "screenX",
  "screenY", "scroll", "scrollbars", "scrollBy", "scrollTo", "scrollX", "scrollY", "self",
  "status", "statusbar", "stop", "toolbar", "top",
];

module.exports = [
  {
    files: ["api/static/**/*.js"],
    ...js.configs.recommended,
  },
  {
    files: ["api/static/**/*.js"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: { ...globals.browser },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-undef": "error",
      "no-unused-vars": ["error", { caughtErrors: "all" }],
      "no-restricted-globals": ["error", ...CONFUSING],
    },
  },
  {
    files: ["tests/js/**/*.mjs"],
    ...js.configs.recommended,
  },
  {
    files: ["tests/js/**/*.mjs"],
    languageOptions: {
      ecmaVersion: "latest",
      sourceType: "module",
      globals: { ...globals.node },
    },
    linterOptions: { reportUnusedDisableDirectives: "error" },
    rules: {
      "no-undef": "error",
      "no-unused-vars": ["error", { caughtErrors: "all" }],
    },
  },
];
