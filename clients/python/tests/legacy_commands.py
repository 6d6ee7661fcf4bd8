"""A command module written for surreal-commands, imports and all."""

from surreal_commands import CommandInput, CommandOutput, command


class GreetInput(CommandInput):
    name: str


class GreetOutput(CommandOutput):
    greeting: str


@command("greet")
async def greet(input_data: GreetInput) -> GreetOutput:
    context = input_data.execution_context
    return GreetOutput(greeting=f"hello {input_data.name} from {context.app_name}")
