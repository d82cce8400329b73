// The plugin's Swagger UI, started from a file (the page's Content-Security-Policy allows no inline script).
(() => {
  "use strict";
  const el = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: el.dataset.openapi, dom_id: "#swagger-ui", layout: "BaseLayout", deepLinking: true,
    showExtensions: true, showCommonExtensions: true,
    presets: [window.SwaggerUIBundle.presets.apis, window.SwaggerUIBundle.SwaggerUIStandalonePreset],
  });
})();
