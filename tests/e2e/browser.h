// Looking at a report.html the way people do: in Debian's Chromium,
// headless, with every network name unresolvable (so a page that needed
// anything from outside would show it), after the page's scripts ran. A
// probe script appended to a copy of the page measures each
// <canvas data-plot> (its size, its data points and how many coloured
// pixels its chart area holds, which axes alone never draw) and
// collects the page's script errors.
#pragma once

#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tests/e2e/run_command.h"

namespace dptrain::testing {

inline const char* kChromium = "/usr/bin/chromium";

struct DrawnPlot {
  int width = 0, height = 0;
  long drawn_pixels = 0;  // coloured pixels inside the chart area: the data
  long points = 0;        // data points over the chart's datasets
};

struct RenderedPage {
  bool ran = false;                        // the probe's output was found
  std::string output;                      // what Chromium printed, for failure messages
  std::vector<std::string> errors;         // uncaught script errors
  std::map<std::string, DrawnPlot> plots;  // by data-plot name
};

inline std::string chromium_flags(const std::string& profile) {
  return std::string(kChromium) +
         " --headless --no-sandbox --disable-gpu --no-first-run --disable-extensions"
         " --disable-background-networking --disable-sync --disable-default-apps"
         " --host-resolver-rules='MAP * ~NOTFOUND' --user-data-dir=" +
         profile;
}

// Renders `html_path` (a copy with the probe) and reads the probe back.
inline RenderedPage render_in_chromium(const std::string& html_path, const TempDir& scratch) {
  std::string page = slurp(html_path);
  const std::string catcher =
      "<script>window.__errors=[];window.addEventListener('error',"
      "e=>window.__errors.push(String(e.message)));</script>";
  const std::string probe = R"(<script>
    window.addEventListener("load", () => setTimeout(() => {
    const lines = [];
    for (const c of document.querySelectorAll("canvas[data-plot]")) {
      // Data, not axes: coloured pixels inside the chart area (grid lines,
      // ticks and labels are grey, legend and title lie outside it).
      const chart = Chart.getChart(c);
      // A canvas the page draws itself says how many values it shows.
      const points = chart ? chart.data.datasets.reduce((n, set) => n + set.data.length, 0)
                           : Number(c.dataset.points || 0);
      const a = chart ? chart.chartArea : { left: 0, top: 0, right: c.width, bottom: c.height };
      const r = window.devicePixelRatio || 1;
      const x0 = Math.floor(a.left * r), y0 = Math.floor(a.top * r);
      const w = Math.max(1, Math.floor((a.right - a.left) * r));
      const h = Math.max(1, Math.floor((a.bottom - a.top) * r));
      const d = c.getContext("2d").getImageData(x0, y0, w, h).data;
      let drawn = 0;
      for (let i = 0; i < d.length; i += 4) {
        const hi = Math.max(d[i], d[i + 1], d[i + 2]), lo = Math.min(d[i], d[i + 1], d[i + 2]);
        if (d[i + 3] > 0 && hi - lo > 60) ++drawn;
      }
      lines.push("plot " + c.dataset.plot + " " + c.width + " " + c.height + " " + drawn + " " + points);
    }
    for (const e of window.__errors) lines.push("error " + e);
    const pre = document.createElement("pre");
    pre.id = "probe";
    pre.textContent = "\n" + lines.join("\n") + "\nend\n";
    document.body.appendChild(pre);
    }, 100));
  </script>)";
  const size_t head = page.find("<head>");
  if (head != std::string::npos) page.insert(head + 6, catcher);
  const size_t end = page.rfind("</body>");
  page.insert(end == std::string::npos ? page.size() : end, probe);
  const std::string copy = scratch / "probed.html";
  std::ofstream(copy) << page;

  RenderedPage out;
  const CommandResult r = run_command(
      "timeout 120 " + chromium_flags(scratch / "profile") +
      " --window-size=1200,2000 --virtual-time-budget=10000 --dump-dom file://" + copy + " 2>&1");
  out.output = r.output;
  const size_t at = r.output.find("<pre id=\"probe\">");
  if (at == std::string::npos) return out;
  std::istringstream in(r.output.substr(at));
  std::string line;
  std::getline(in, line);
  while (std::getline(in, line) && line != "end") {
    std::istringstream words(line);
    std::string kind;
    words >> kind;
    if (kind == "plot") {
      std::string name;
      DrawnPlot p;
      words >> name >> p.width >> p.height >> p.drawn_pixels >> p.points;
      out.plots[name] = p;
    } else if (kind == "error") {
      out.errors.push_back(line.substr(6));
    }
  }
  out.ran = true;
  return out;
}

// Attributes and CSS that would fetch something when the page is viewed:
// src=, href=, action= or url( followed by http:, https: or //, and any
// @import.
inline std::vector<std::string> external_references(const std::string& html) {
  std::string lower = html;
  for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::vector<std::string> found;
  for (const std::string lead : {"src=", "href=", "action=", "url("}) {
    for (size_t at = lower.find(lead); at != std::string::npos; at = lower.find(lead, at + 1)) {
      size_t v = at + lead.size();
      while (v < lower.size() && (lower[v] == '"' || lower[v] == '\'' || lower[v] == ' ')) ++v;
      const std::string rest = lower.substr(v, 8);
      if (rest.rfind("http:", 0) == 0 || rest.rfind("https:", 0) == 0 || rest.rfind("//", 0) == 0)
        found.push_back(html.substr(at, 60));
    }
  }
  if (lower.find("@import") != std::string::npos) found.push_back("@import");
  return found;
}

}  // namespace dptrain::testing
