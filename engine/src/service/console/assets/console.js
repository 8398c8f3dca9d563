// nudge console: the zone field applies as soon as a zone is picked (the Apply button stays
// for browsers without script), and a campaign page whose clicks and lift are still being read
// reloads itself. Every page works without this script.
"use strict";
document.addEventListener("change", (event) => {
  const input = event.target;
  if (input.name === "zone" && input.form && input.value.includes("/")) {
    input.form.requestSubmit();
  }
});
if (document.getElementById("figures-reading")) {
  setTimeout(() => window.location.reload(), 1500);
}
