import { create } from "@bufbuild/protobuf";
import { fireEvent, render, screen, within } from "@testing-library/react";
import { describe, expect, it, vi } from "vitest";
import { CapabilityProvidersSchema } from "@gen/tasker/v1/cluster_pb.js";
import { Palette } from "./Palette";

const caps = [
  create(CapabilityProvidersSchema, { name: "payments.charge", providers: [{ agent: "a1", description: "Charge a card", outputSchemaJson: '{"type":"object","properties":{"charge_id":{"type":"string"}}}' }] }),
  create(CapabilityProvidersSchema, { name: "inventory.reserve", providers: [{ agent: "a1", description: "Hold stock" }] }),
  create(CapabilityProvidersSchema, { name: "shipping.book", providers: [{ agent: "a2" }, { agent: "a3" }] }),
];

function names(): string[] {
  return screen.getAllByRole("listitem").map((li) => li.querySelector("strong")?.textContent ?? "");
}

describe("Palette", () => {
  it.each([
    ["", ["payments.charge", "inventory.reserve", "shipping.book"]],
    ["pay", ["payments.charge"]],
    ["STOCK", ["inventory.reserve"]],
    ["  ship ", ["shipping.book"]],
    ["nothing", []],
  ])("filters by %j", (query, want) => {
    render(<Palette capabilities={caps} onAdd={() => {}} />);
    fireEvent.change(screen.getByRole("searchbox", { name: "Search" }), { target: { value: query } });
    expect(want.length ? names() : screen.queryAllByRole("listitem")).toEqual(want);
    if (!want.length) expect(screen.getByText(/Nothing matches/)).toBeTruthy();
  });
  it("shows descriptions and schemas, and adds a step from the keyboard", () => {
    const onAdd = vi.fn();
    render(<Palette capabilities={caps} onAdd={onAdd} />);
    expect(screen.getByText("Charge a card")).toBeTruthy();
    expect(screen.getByText("2 providers")).toBeTruthy();
    const item = screen.getAllByRole("listitem")[0]!;
    expect(within(item).getByText(/charge_id/)).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Add step inventory.reserve" }));
    expect(onAdd).toHaveBeenCalledWith("inventory.reserve");
  });
});
