using System.Buffers.Binary;
using System.Globalization;
using System.Numerics;
using System.Text;

namespace KataAgent.BackendAi.Serialization;

/// <summary>
/// Reads the pickles Backend.AI puts in ext 3/6/7/8/16. Only the opcodes those pickles use are understood, and only
/// these globals may be called: decimal.Decimal, ai.backend.common.types.ResourceSlot and BinarySize,
/// ai.backend.common.docker.ImageRef, and (in an ext 6 pickle only) any class, read as an enum member.
/// Anything else is refused with an error naming the global; nothing is ever instantiated by name.
/// </summary>
/// <remarks>
/// Razorvine's Unpickler was the first choice but does not fit: its constructor registry is a process-wide static
/// dictionary (registering enum classes as they show up would race with concurrent loads), and an unregistered
/// class called with arguments fails, so "any enum class" cannot be read without knowing every class name in
/// advance. It would also happily build ClassDicts for arbitrary globals, where this reader refuses them.
/// </remarks>
internal sealed class PickleReader
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private static readonly object MarkObject = new();

    private readonly byte[] _data;
    private readonly bool _enumContext;
    private readonly List<object?> _stack = [];
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<int, object?> _memo = [];
    private int _position;

    private PickleReader(byte[] data, bool enumContext)
    {
        _data = data;
        _enumContext = enumContext;
    }

    /// <summary>Unpickles one Backend.AI value; <paramref name="what"/> names the ext type in errors.</summary>
    public static object? Load(ReadOnlySpan<byte> pickle, string what, bool enumContext = false)
    {
        try
        {
            return new PickleReader(pickle.ToArray(), enumContext).Run();
        }
        catch (BackendAiCodecException e)
        {
            throw new BackendAiCodecException($"{what}: {e.Message}", e);
        }
        catch (Exception e) when (e is InvalidCastException or ArgumentException or OverflowException or FormatException or DecoderFallbackException)
        {
            throw new BackendAiCodecException($"{what}: malformed pickle ({e.Message})", e);
        }
    }

    private object? Run()
    {
        while (true)
        {
            var opcode = ReadByte();
            switch (opcode)
            {
                case 0x80: // PROTO
                    var protocol = ReadByte();
                    if (protocol > 5)
                    {
                        throw new BackendAiCodecException($"pickle protocol {protocol} is newer than 5");
                    }

                    break;
                case 0x95: // FRAME: frames only group bytes; the length is checked by reading past it
                    Take(8);
                    break;
                case 0x2e: // STOP
                    if (_position != _data.Length)
                    {
                        throw new BackendAiCodecException($"{_data.Length - _position} bytes follow the pickle's STOP");
                    }

                    if (_stack.Count != 1 || _marks.Count != 0)
                    {
                        throw new BackendAiCodecException("pickle _stack is not a single value at STOP");
                    }

                    return Unwrap(_stack[0]);
                case 0x8c: // SHORT_BINUNICODE
                    Push(StrictUtf8.GetString(Take(ReadByte())));
                    break;
                case 0x58: // BINUNICODE
                    Push(StrictUtf8.GetString(Take(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))));
                    break;
                case 0x8d: // BINUNICODE8
                    Push(StrictUtf8.GetString(Take(checked((int)BinaryPrimitives.ReadUInt64LittleEndian(Take(8))))));
                    break;
                case 0x43: // SHORT_BINBYTES
                    Push(Take(ReadByte()).ToArray());
                    break;
                case 0x42: // BINBYTES
                    Push(Take(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))).ToArray());
                    break;
                case 0x4b: // BININT1
                    Push((long)ReadByte());
                    break;
                case 0x4d: // BININT2
                    Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2)));
                    break;
                case 0x4a: // BININT
                    Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4)));
                    break;
                case 0x8a: // LONG1
                    Push(ToLong(Take(ReadByte())));
                    break;
                case 0x8b: // LONG4
                    Push(ToLong(Take(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))));
                    break;
                case 0x47: // BINFLOAT
                    Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8)));
                    break;
                case 0x4e: // NONE
                    Push(null);
                    break;
                case 0x88: // NEWTRUE
                    Push(true);
                    break;
                case 0x89: // NEWFALSE
                    Push(false);
                    break;
                case 0x94: // MEMOIZE
                    _memo[_memo.Count] = Peek();
                    break;
                case 0x71: // BINPUT
                    _memo[ReadByte()] = Peek();
                    break;
                case 0x72: // LONG_BINPUT
                    _memo[BinaryPrimitives.ReadInt32LittleEndian(Take(4))] = Peek();
                    break;
                case 0x68: // BINGET
                    Push(Recall(ReadByte()));
                    break;
                case 0x6a: // LONG_BINGET
                    Push(Recall(BinaryPrimitives.ReadInt32LittleEndian(Take(4))));
                    break;
                case 0x28: // MARK
                    _marks.Push(_stack.Count);
                    break;
                case 0x29: // EMPTY_TUPLE
                    Push(Array.Empty<object?>());
                    break;
                case 0x85: // TUPLE1
                case 0x86: // TUPLE2
                case 0x87: // TUPLE3
                    Push(PopMany(opcode - 0x84));
                    break;
                case 0x74: // TUPLE
                    Push(PopToMark());
                    break;
                case 0x5d: // EMPTY_LIST
                    Push(new List<object?>());
                    break;
                case 0x61: // APPEND
                    var item = Pop();
                    Expect<List<object?>>(Peek(), "APPEND").Add(item);
                    break;
                case 0x65: // APPENDS
                    var items = PopToMark();
                    Expect<List<object?>>(Peek(), "APPENDS").AddRange(items);
                    break;
                case 0x7d: // EMPTY_DICT
                    Push(new Dictionary<object, object?>(PyKeyComparer.Instance));
                    break;
                case 0x73: // SETITEM
                    var value = Pop();
                    var key = Pop();
                    SetItem(Peek(), key, value);
                    break;
                case 0x75: // SETITEMS
                    var pairs = PopToMark();
                    for (var i = 0; i + 1 < pairs.Length; i += 2)
                    {
                        SetItem(Peek(), pairs[i], pairs[i + 1]);
                    }

                    break;
                case 0x93: // STACK_GLOBAL
                    var name = Expect<string>(Pop(), "STACK_GLOBAL name");
                    var module = Expect<string>(Pop(), "STACK_GLOBAL module");
                    Push(new Global(module, name));
                    break;
                case 0x63: // GLOBAL
                    var textModule = ReadLine();
                    Push(new Global(textModule, ReadLine()));
                    break;
                case 0x52: // REDUCE
                    var reduceArgs = Expect<object?[]>(Pop(), "REDUCE arguments");
                    Push(Call(Expect<Global>(Pop(), "REDUCE callable"), reduceArgs, newObject: false));
                    break;
                case 0x81: // NEWOBJ
                    var newArgs = Expect<object?[]>(Pop(), "NEWOBJ arguments");
                    Push(Call(Expect<Global>(Pop(), "NEWOBJ class"), newArgs, newObject: true));
                    break;
                case 0x62: // BUILD
                    var state = Pop();
                    Expect<PendingObject>(Peek(), "BUILD target").State = state;
                    break;
                default:
                    throw new BackendAiCodecException($"pickle opcode 0x{opcode:x2} at offset {_position - 1} is not one Backend.AI's values use");
            }
        }
    }

    private object Call(Global callable, object?[] args, bool newObject)
    {
        switch (callable.Module, callable.Name, newObject)
        {
            case ("decimal", "Decimal", false):
                return ParseDecimal(Expect<string>(Single(args, callable), "Decimal argument"));
            case ("ai.backend.common.types", "BinarySize", true):
                return new BinarySize(Expect<long>(Single(args, callable), "BinarySize argument"));
            case ("ai.backend.common.types", "ResourceSlot", true):
            case ("ai.backend.common.docker", "ImageRef", true):
                if (args.Length != 0)
                {
                    throw new BackendAiCodecException($"{callable} was created with {args.Length} arguments; none expected");
                }

                return new PendingObject(callable);
            case ("builtins", "getattr", false) when _enumContext:
                // Python before 3.12 pickled members by name; the value, which is what the manager means, is unknown.
                throw new BackendAiCodecException(
                    $"enum member pickled by name ({Describe(args)}), as Python < 3.12 does; only the by-value form of Python 3.12+ is supported");
            case (_, _, false) when _enumContext && args.Length == 1 && args[0] is string or long or bool or null or double:
                return new PyEnum(callable.Module, callable.Name, args[0]);
            default:
                throw new BackendAiCodecException($"pickle calls {callable}, which Backend.AI's values never do; refusing to unpickle it");
        }
    }

    private static object? Unwrap(object? value) => value switch
    {
        PendingObject pending => pending.Finish(),
        _ => value,
    };

    private static decimal ParseDecimal(string text)
    {
        if (decimal.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var value))
        {
            return value;
        }

        throw new BackendAiCodecException($"Decimal('{text}') does not fit a .NET decimal");
    }

    private static long ToLong(ReadOnlySpan<byte> littleEndian)
    {
        var value = new BigInteger(littleEndian, isUnsigned: false, isBigEndian: false);
        if (value < long.MinValue || value > long.MaxValue)
        {
            throw new BackendAiCodecException($"pickled integer {value} does not fit 64 bits");
        }

        return (long)value;
    }

    private static object? Single(object?[] args, Global callable) =>
        args.Length == 1 ? args[0] : throw new BackendAiCodecException($"{callable} was called with {args.Length} arguments; 1 expected");

    private static string Describe(object?[] args) => string.Join(", ", args.Select(a => a?.ToString() ?? "None"));

    private static void SetItem(object? target, object? key, object? value)
    {
        var dict = Expect<Dictionary<object, object?>>(target, "SETITEM target");
        dict[key ?? throw new BackendAiCodecException("pickled dict has a None key")] = Unwrap(value);
    }

    private static T Expect<T>(object? value, string what) => value is T typed
        ? typed
        : throw new BackendAiCodecException($"{what} is a {value?.GetType().Name ?? "None"}, not a {typeof(T).Name}");

    private object? Recall(int index) =>
        _memo.TryGetValue(index, out var value) ? value : throw new BackendAiCodecException($"pickle refers to _memo {index}, which was never stored");

    private void Push(object? value) => _stack.Add(value);

    private object? Pop()
    {
        var floor = _marks.Count > 0 ? _marks.Peek() : 0;
        if (_stack.Count <= floor)
        {
            throw new BackendAiCodecException("pickle pops from an empty _stack");
        }

        var value = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return value;
    }

    private object? Peek() => _stack.Count > 0 ? _stack[^1] : throw new BackendAiCodecException("pickle reads an empty _stack");

    private object?[] PopMany(int count)
    {
        var values = new object?[count];
        for (var i = count - 1; i >= 0; i--)
        {
            values[i] = Unwrap(Pop());
        }

        return values;
    }

    private object?[] PopToMark()
    {
        if (_marks.Count == 0)
        {
            throw new BackendAiCodecException("pickle has no MARK to pop to");
        }

        var start = _marks.Pop();
        var values = _stack.Skip(start).Select(Unwrap).ToArray();
        _stack.RemoveRange(start, _stack.Count - start);
        return values;
    }

    private byte ReadByte() => Take(1)[0];

    private ReadOnlySpan<byte> Take(int count)
    {
        if (count < 0 || _data.Length - _position < count)
        {
            throw new BackendAiCodecException($"pickle is truncated at offset {_position} (needs {count} more bytes)");
        }

        var span = _data.AsSpan(_position, count);
        _position += count;
        return span;
    }

    private string ReadLine()
    {
        var end = Array.IndexOf(_data, (byte)'\n', _position);
        if (end < 0)
        {
            throw new BackendAiCodecException("pickle is truncated inside a GLOBAL line");
        }

        var line = Encoding.UTF8.GetString(_data, _position, end - _position);
        _position = end + 1;
        return line;
    }

    private sealed record Global(string Module, string Name)
    {
        public override string ToString() => $"{Module}.{Name}";
    }

    /// <summary>An object made by NEWOBJ whose contents arrive with the following BUILD.</summary>
    private sealed class PendingObject(Global type)
    {
        public object? State { get; set; }

        public object Finish() => type.Name switch
        {
            "ResourceSlot" => FinishResourceSlot(),
            _ => FinishImageRef(),
        };

        private ResourceSlot FinishResourceSlot()
        {
            // Slots give (None or __dict__, {"data": ...}); a plain __dict__ with "data" is accepted too.
            var slots = State switch
            {
                object?[] { Length: 2 } pair => Expect<Dictionary<object, object?>>(pair[1], "ResourceSlot slot state"),
                Dictionary<object, object?> dict => dict,
                _ => throw new BackendAiCodecException($"ResourceSlot state is a {State?.GetType().Name ?? "None"}"),
            };
            if (!slots.TryGetValue("data", out var content))
            {
                throw new BackendAiCodecException("ResourceSlot state has no '_data'");
            }

            var result = new ResourceSlot();
            foreach (var (slot, amount) in Expect<Dictionary<object, object?>>(content, "ResourceSlot _data"))
            {
                var slotName = Expect<string>(slot, "ResourceSlot key");
                result[slotName] = amount switch
                {
                    decimal number => number,
                    long number => number,
                    string text => ParseDecimal(text),
                    _ => throw new BackendAiCodecException(
                        $"ResourceSlot['{slotName}'] is a {amount?.GetType().Name ?? "None"}, not a Decimal"),
                };
            }

            return result;
        }

        private PyImageRef FinishImageRef()
        {
            var fields = Expect<Dictionary<object, object?>>(State, "ImageRef state");
            string Text(string field) => fields.TryGetValue(field, out var v) && v is string s
                ? s
                : throw new BackendAiCodecException($"ImageRef.{field} is missing or not a str");
            var project = fields.TryGetValue("project", out var p) ? p : null;
            return new PyImageRef(
                Text("name"),
                project is null ? null : Expect<string>(project, "ImageRef.project"),
                Text("tag"),
                Text("registry"),
                Text("architecture"),
                fields.TryGetValue("is_local", out var local) && local is bool isLocal
                    ? isLocal
                    : throw new BackendAiCodecException("ImageRef.is_local is missing or not a bool"));
        }
    }
}
