// ESLint for the nurse station page (api/static, docs/interfaces.md section 4), run by
// scripts/test. The page is one ES module (index.html loads it with type="module") run by the
// browser as it is, so a name it never declares is an error here: in the browser it would
// resolve to whatever the window holds under that name, as `live` once resolved to the
// <p id="live"> element (issue 17).

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
];
