// nudge console: the zone field applies as soon as a zone is picked (the Apply button stays
// for browsers without script). No other script: every page works without it.
"use strict";
document.addEventListener("change", (event) => {
  const input = event.target;
  if (input.name === "zone" && input.form && input.value.includes("/")) {
    input.form.requestSubmit();
  }
});
